from embench.cli import main

main()
