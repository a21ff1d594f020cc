"""`python -m arhmm_eqx`: the command line (`arhmm_eqx.workflow`)."""

from .workflow._cli import cli


if __name__ == "__main__":
    cli()
