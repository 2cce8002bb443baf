"""``python -m edgeinfer``: the same command line as the ``edgeinfer`` console script."""
from .cli import main

if __name__ == "__main__":
    main()
