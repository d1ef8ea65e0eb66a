import sys

from berth.runtime.server import main

sys.exit(main())
