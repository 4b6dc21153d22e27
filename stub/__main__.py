from stub.cli import entry

entry()
