from lockship.stub.cli import entry

entry()
