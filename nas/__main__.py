from nas.cli import app

if __name__ == "__main__":  # worker processes (spawn) import this module: they must not run the CLI
    app(prog_name="nas")
