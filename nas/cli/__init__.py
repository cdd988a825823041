"""`nas` command line: thin commands that parse flags, call the library (nas.api), print.

    app        the application, one-line errors, consoles, shared options
    archflags  the architecture flags of count, train and bench
    count      nas count, nas space
    search     nas search
    results    nas leaderboard, nas show, nas report
    retrain    nas retrain
    train      nas train, nas bench
    deploy     nas export
"""

# each module registers its commands, in the order `nas --help` lists them
from nas.cli import count, search, retrain, results, train, deploy  # noqa: F401, I001
from nas.cli.app import app

__all__ = ["app"]
