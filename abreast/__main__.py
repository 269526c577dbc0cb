from abreast.cli import main

main()
