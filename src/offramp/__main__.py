from offramp.cli.main import run

run()
