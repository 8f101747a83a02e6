from hps.cli import app

app(prog_name="hps")
