import sys

from bang_nar.cli import main

sys.exit(main())
