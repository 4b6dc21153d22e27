from lsdemo_greet import main

main()
