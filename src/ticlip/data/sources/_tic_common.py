"""What the three TiC release sources share: their options, checked before anything is read."""

from __future__ import annotations

from typing import Callable

from ticlip.data.sources import SourceSpec, check_options
from ticlip.errors import TiclipError


def tic_source(name: str, reader: Callable, checker: Callable, second: str, help_: dict[str, str],
               default_build: dict, description: str) -> SourceSpec:
    """A SourceSpec whose options are ``path`` (required) and ``second`` (``images`` or ``timestamps``)."""

    def options_of(options: dict | None) -> tuple[str, str | None]:
        options = check_options(name, options, help_)
        path = options.get("path")
        if not path:
            raise TiclipError(f"source {name!r} needs option path ({help_['path']}); e.g. "
                              f"`ticlip data build FILE --format {name}` or --option path=FILE")
        second_value = options.get(second)
        return str(path), None if second_value in (None, "") else str(second_value)

    def check(options: dict | None) -> None:
        checker(*options_of(options))

    def records(options: dict | None):
        path, other = options_of(options)
        checker(path, other)  # one-line errors now, not at the first row
        return reader(path, other)

    return SourceSpec(name=name, records=records, default_build=default_build, options_help=help_,
                      description=description, check=check)
