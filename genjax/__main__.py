"""`python -m genjax`: the genjax command (genjax.cli)."""
from genjax import cli

if __name__ == '__main__':
  cli.main()
