"""`python -m runner.zoo`: print the tiny zoo's folder, building it if needed."""
import sys

from runner.zoo import main

sys.exit(main())
