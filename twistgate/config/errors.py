"""
Configuration errors: every problem found, one line each, with its location.
"""

from typing import Iterable, List


class ConfigError(Exception):
    """
    A configuration (file, filter metadata or filter C{on_configure}) was
    rejected.

    @ivar errors: one message per problem, each C{"<file>: <path>: <what>"},
        e.g. C{'config/kong.yml: services[0].routes[1].paths[0]: "api" must
        start with "/" or "~"'}.
    """

    def __init__(self, errors: Iterable[str]) -> None:
        self.errors: List[str] = list(errors)
        super().__init__("\n".join(self.errors))
