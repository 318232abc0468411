"""Settings: the SERVING_* variables (`config.Settings`), the rules across them (`checks`) and
the start-up message for a bad value (`errors`). Built once and passed in, never read at
import time."""
