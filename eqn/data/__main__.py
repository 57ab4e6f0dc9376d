from eqn.data.download import main

main()
