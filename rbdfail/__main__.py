from rbdfail.cli import run

run()
