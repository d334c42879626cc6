from rbdfail.cli import main

main(prog_name="rbdfail")
