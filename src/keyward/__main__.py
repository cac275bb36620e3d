import sys

from keyward.cli.main import main

sys.exit(main())
