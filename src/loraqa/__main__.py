from loraqa.cli import main

main()
