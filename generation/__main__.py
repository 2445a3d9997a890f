from bioinstruct.generation.cli import main

main()
