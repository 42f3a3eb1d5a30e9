"""``ModelEvent``: a pydantic model keyed by the model it describes and the event name.

::

    class BookingUpdated(ModelEvent, model="shop.models.Booking", event="updated", version=2):
        id: int
        status: str

Defining the class registers it in the default schema catalog (pass
``register=False`` to keep it out, e.g. for a test that builds its own
``PubSub(schemas=[...])``).

Tolerance: consuming ignores unknown fields, so a producer can add a field
before every consumer knows it; publishing rejects unknown fields, so a typo
never leaves the building. NaN and Infinity are refused both ways: they are not
JSON.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from pubsubpy.errors import ConfigurationError

__all__ = ["ModelEvent", "routing_key_for"]


def routing_key_for(model: str, event: str) -> str:
    """``shop.models.Booking`` + ``updated`` -> ``Booking.updated``."""
    return f"{model.rsplit('.', 1)[-1]}.{event}"


def _check_name(kind: str, value: object, owner: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{owner}: {kind}= must be a non-empty str, got {value!r}")
    if any(ch in value for ch in "*# ") or ".." in value or value.startswith(".") or value.endswith("."):
        raise ConfigurationError(f"{owner}: {kind}={value!r} may not contain '*', '#', spaces or empty words")
    return value


class ModelEvent(BaseModel):
    """Base class of event schemas: a pydantic model keyed by the model it describes and the event name.

    ```python
    class BookingUpdated(ModelEvent, model="shop.models.Booking", event="updated"):
        id: int
        status: str
    ```

    Class keywords:

    - ``model``: the full path of the model the event is about (``"shop.models.Booking"``); its last segment
      starts the routing key.
    - ``event``: what happened, one word (``"updated"``). Routing key: ``Booking.updated``.
    - ``version``: this schema's version of the event (default 1). Versions live side by side; see
      ``pubsubpy.upcaster``.
    - ``compatibility``: what ``pubsubpy schema check`` holds new versions to: ``"full"`` (default),
      ``"backward"``, ``"forward"`` or ``"none"``.
    - ``key``: the field that names the aggregate an event is about (``key="id"``): events of one key are
      handled in order by ``ordered=True`` subscriptions. Every event and version of one model names the same
      field. The wire carries ``pubsubpy-key: <model>:<value>``.
    - ``sequence``: an integer field growing with each change of one aggregate (``sequence="row_version"``,
      never the schema version), carried as ``pubsubpy-sequence``: the stale-event guard of
      ``ordered=True, idempotent=True`` subscriptions skips an event not newer than the last applied.
    - ``register``: ``False`` keeps the class out of the default catalogue (for a ``PubSub(schemas=[...])``
      of its own, in tests).

    A class without ``model``/``event`` is an abstract base for other schemas. Publishing is strict (unknown
    fields are refused); consuming is tolerant (unknown fields are ignored), so producers can add a field
    before consumers know it. NaN and Infinity are refused both ways. Instances validate from attributes, so a
    Django model instance can be the payload.

    Raises:
        ConfigurationError: at class definition: ``model`` without ``event`` (or the reverse), a name with
            ``*``, ``#``, spaces or empty words, an ``event`` with dots, a bad ``version`` or ``compatibility``,
            or another schema already claiming the same routing key or (model, event, version); ``key`` or
            ``sequence`` naming no field, or another event or version of the model naming another ``key``.
    """

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, from_attributes=True)

    __pubsub_model__: ClassVar[str | None] = None
    __pubsub_event__: ClassVar[str | None] = None
    __pubsub_version__: ClassVar[int] = 1
    __pubsub_compatibility__: ClassVar[str] = "full"  # what `pubsubpy schema check` holds new versions to
    __pubsub_key__: ClassVar[str | None] = None        # the ordering key's field
    __pubsub_sequence__: ClassVar[str | None] = None   # the per-key sequence's field

    def __init_subclass__(
        cls,
        *,
        model: str | None = None,
        event: str | None = None,
        version: int = 1,
        register: bool = True,
        compatibility: str = "full",
        key: str | None = None,
        sequence: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        owner = f"{cls.__module__}.{cls.__qualname__}"
        if (model is None) != (event is None):
            raise ConfigurationError(f"{owner}: pass both model= and event=, or neither (an abstract base)")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ConfigurationError(f"{owner}: version= must be a positive int, got {version!r}")
        if compatibility not in ("backward", "forward", "full", "none"):
            raise ConfigurationError(f"{owner}: compatibility= must be backward, forward, full or none, "
                                     f"got {compatibility!r}")
        if model is None:
            return
        cls.__pubsub_compatibility__ = compatibility
        cls.__pubsub_model__ = _check_name("model", model, owner)
        event_name = _check_name("event", event, owner)
        if "." in event_name:
            raise ConfigurationError(f"{owner}: event={event_name!r} must be one word (no dots)")
        cls.__pubsub_event__ = event_name
        cls.__pubsub_version__ = version
        for kind, name in (("key", key), ("sequence", sequence)):
            if name is not None and (not isinstance(name, str) or not name.isidentifier()):
                raise ConfigurationError(f"{owner}: {kind}= must name a field, got {name!r}")
        cls.__pubsub_key__, cls.__pubsub_sequence__ = key, sequence

    @classmethod
    def __pydantic_init_subclass__(cls, *, register: bool = True, **kwargs: Any) -> None:
        """Once pydantic has built the fields: check ``key``/``sequence`` name fields, then register."""
        super().__pydantic_init_subclass__(**kwargs)
        if cls.__dict__.get("__pubsub_model__") is None:
            return
        owner = f"{cls.__module__}.{cls.__qualname__}"
        for kind in ("key", "sequence"):
            name = cls.__dict__.get(f"__pubsub_{kind}__")
            if name is not None and name not in cls.model_fields:
                raise ConfigurationError(f"{owner}: {kind}={name!r} is not one of its fields "
                                         f"({', '.join(cls.model_fields) or 'none'})")
        if register:
            from pubsubpy.schemas._registry import default_catalog

            default_catalog.register(cls)

    @classmethod
    def event_key(cls) -> tuple[str, str]:
        """``(model, event)``; raises ``ConfigurationError`` on an abstract base."""
        if cls.__pubsub_model__ is None or cls.__pubsub_event__ is None:
            raise ConfigurationError(f"{cls.__qualname__} has no model=/event= keywords; it is not an event schema")
        return cls.__pubsub_model__, cls.__pubsub_event__

    @classmethod
    def routing_key(cls) -> str:
        """The routing key: ``<last segment of model>.<event>`` (``Booking.updated``)."""
        return routing_key_for(*cls.event_key())

    @classmethod
    def event_type(cls) -> str:
        """The AMQP ``type`` property: full model path and event, ``shop.models.Booking.updated``."""
        model, event = cls.event_key()
        return f"{model}.{event}"
