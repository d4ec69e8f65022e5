"""The HTML report (rule report): the page and its inline SVG charts. Reads result files
from explicit paths; imports agfsync.core only.
"""
