from synthgate.cli import main

main()
