"""`python server.py [--config FILE] …`: the same as `switchboard serve …`."""
import sys

from switchboard.cli import main

sys.exit(main(["serve", *sys.argv[1:]]))
