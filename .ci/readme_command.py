"""Prints command N (1-based) of README.md's Quickstart code block, so CI runs what users run."""

import re
import sys

text = open("README.md").read()
match = re.search(r"^#+\s*Quick\s*start.*?```[a-z]*\n(.*?)```", text, re.S | re.I | re.M)
if not match:
  sys.exit("README.md has no Quickstart code block")
commands = [
  line.strip()
  for line in match.group(1).splitlines()
  if line.strip() and not line.strip().startswith("#")
]
if len(commands) != 2:
  sys.exit(f"README.md's Quickstart block must hold exactly two commands, found {len(commands)}")
print(commands[int(sys.argv[1]) - 1])
