from fleet.cli import app

app(prog_name="python -m fleet")
