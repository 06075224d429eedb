import sys

from geovit.cli import main

sys.exit(main())
