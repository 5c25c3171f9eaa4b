"""The destination types: every module of this package whose name does not start with
``_`` is one, and declares what it is in its ``SPEC``.

A type is one module: ``config`` asks this registry for the type's default URL, its
limits, its defaults and its own keys, and the drain asks it for the destination
object; neither knows a type by name. Modules whose name starts with ``_`` are the
package's own helpers. Importing a type module must stay cheap (no httpx: a drain
imports that when it makes its destinations), because ``spooler enqueue`` checks the
config file's destinations too.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

if TYPE_CHECKING:
    from ..checks import Checker
    from ..config import DestinationConfig
    from ..store.interface import SpoolStore
    from . import Destination

__all__ = [
    "DEFAULT_TYPE",
    "DestinationOptions",
    "DestinationSpec",
    "NoOptions",
    "Option",
    "all_options",
    "build_destination",
    "destination_types",
    "option",
    "options_of",
    "spec_for",
    "type_for_url",
]

#: The type of a destination whose URL no type claims (``http://...``).
DEFAULT_TYPE = "http"
OptionsT = TypeVar("OptionsT")

Factory = Callable[["DestinationConfig", Callable[[], float]], "Destination"]
#: A rule of a type about a whole destination: raises ``ConfigError`` naming the key as
#: ``where + key`` (``where``: ``"destinations.NAME."``).
Check = Callable[["DestinationConfig", str], None]
#: A rule of a type about a destination and the spool it is drained from: raises
#: ``ConfigError`` where the two cannot work together.
SpoolCheck = Callable[["DestinationConfig", "SpoolStore"], None]


@dataclass(frozen=True)
class Option:
    """How one of a type's own keys is checked and shown (a field's metadata)."""

    check: Checker
    secret: bool = False  # masked when shown, and read from ${VAR}s in the file
    shown: Callable[[Any], Any] | None = None  # its form in `spooler config check`


def option(
    default: Any, check: Checker, *, secret: bool = False, shown: Callable[[Any], Any] | None = None
) -> Any:
    """A field of a type's options dataclass: its default, its check, how it is shown.

    Usage::

        @dataclass(frozen=True)
        class HttpOptions:
            gzip: bool = option(False, checks.boolean)
    """
    return field(
        default=default, repr=not secret, metadata={"option": Option(check, secret, shown)}
    )


class DestinationOptions(Protocol):
    """A type's own keys: an instance of the dataclass its spec names (``options``),
    read through ``options_of`` as that class."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]


@dataclass(frozen=True)
class NoOptions:
    """The options of a type that has no keys of its own."""


@dataclass(frozen=True)
class DestinationSpec:
    """What a destination type declares about itself: its module's ``SPEC``.

    Usage (a module ``spooler/destinations/example.py``)::

        SPEC = DestinationSpec(
            name="example",
            factory=lambda config, clock: ExampleDestination(config, clock=clock),
            default_url="https://ingest.example.com/v1/events",
            max_batch_size=100,
            needs_api_key=True,
            event_id_key="event_id",
            checks=(check_http_url,),
        )

    ``defaults`` are the type's own defaults for the keys every type has (``batch_size``,
    ``concurrency``, ``auth_header``); ``options`` is a dataclass of the keys only this
    type has, made with ``option()``; ``checks`` run on the whole destination once its
    keys are checked one by one, and ``spool_checks`` once the spool it is drained from
    is known (``check_against_spool``). ``claims_url`` says whether a URL given without
    a type is this type's (else it is ``DEFAULT_TYPE``'s).
    """

    name: str
    factory: Factory
    title: str = ""  # the API's name in messages, e.g. "Datalyr" (default: name)
    default_url: str | None = None
    max_batch_size: int | None = None
    max_concurrency: int | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    options: type[DestinationOptions] = NoOptions
    needs_api_key: bool = False
    api_key_prefix: str = ""
    #: Whether the API key is sent in ``auth_header`` (so ``headers`` must not set it too).
    key_in_auth_header: bool = False
    #: The key under which each event carries its event id (None: ``id_field``, if set).
    event_id_key: str | None = None
    claims_url: Callable[[str], bool] | None = None
    checks: tuple[Check, ...] = ()
    spool_checks: tuple[SpoolCheck, ...] = ()

    def option_fields(self) -> dict[str, Option]:
        """This type's own keys, and how each is checked."""
        return {f.name: f.metadata["option"] for f in dataclasses.fields(self.options)}

    def check_against_spool(self, config: DestinationConfig, store: SpoolStore) -> None:
        """Raise ``ConfigError`` if ``config`` cannot be drained from ``store`` (the file
        type: a file of the spool itself)."""
        for check in self.spool_checks:
            check(config, store)

    def build(self, config: DestinationConfig, clock: Callable[[], float]) -> Destination:
        """The destination object for ``config`` (a drain calls this as it starts)."""
        return self.factory(config, clock)


def _specs() -> Iterator[DestinationSpec]:
    """The ``SPEC`` of every type module, in the order of their names."""
    package = importlib.import_module(__package__)
    for module in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not module.name.startswith("_"):
            spec = importlib.import_module(f"{__package__}.{module.name}").SPEC
            yield spec


def destination_types() -> tuple[str, ...]:
    """The names of every destination type."""
    return tuple(spec.name for spec in _specs())


def spec_for(kind: str) -> DestinationSpec:
    """The spec of destination type ``kind`` (a ``KeyError`` if there is none)."""
    for spec in _specs():
        if spec.name == kind:
            return spec
    raise KeyError(kind)


def type_for_url(url: str) -> str:
    """The type of a destination given only a URL: the one that claims it, else ``http``."""
    for spec in _specs():
        if spec.claims_url is not None and spec.claims_url(url):
            return spec.name
    return DEFAULT_TYPE


def all_options() -> dict[str, tuple[Option, tuple[str, ...]]]:
    """Every type's own keys: how each is checked, and the types that have it."""
    found: dict[str, tuple[Option, tuple[str, ...]]] = {}
    for spec in _specs():
        for key, how in spec.option_fields().items():
            first, owners = found.get(key, (how, ()))
            found[key] = (first, (*owners, spec.name))
    return found


def options_of(config: DestinationConfig, kind: type[OptionsT]) -> OptionsT:
    """``config``'s options, which must be a ``kind``: a destination's typed view of them."""
    if not isinstance(config.options, kind):
        raise TypeError(f"destination {config.name}: options {config.options!r} are not {kind}")
    return config.options


def build_destination(
    config: DestinationConfig, *, clock: Callable[[], float] = time.time
) -> Destination:
    """Create the destination object of ``config.type``."""
    return spec_for(config.type).build(config, clock)
