from instaset.cli import main

main()
