"""The catalog for selection: the project's candidates and every packaged model with its card, plus a
Hugging Face hub search when online (offline: a note, not a failure)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class HubHit:
    id: str
    downloads: int | None
    likes: int | None
    pipeline_tag: str | None
    license: str | None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class HubSearch:
    query: str
    hits: list[HubHit] = field(default_factory=list)
    note: str = ""

    def as_dict(self) -> dict:
        return {"query": self.query, "note": self.note, "hits": [h.as_dict() for h in self.hits]}


def hub_search(query: str, limit: int = 10, task: str | None = "text-generation") -> HubSearch:
    """Most-downloaded hub models matching ``query``; offline or unreachable gives a note and no hits."""
    import os

    if os.environ.get("HF_HUB_OFFLINE", "") not in {"", "0"}:
        return HubSearch(query, note="hub search skipped: HF_HUB_OFFLINE is set (offline mode)")
    try:
        from huggingface_hub import HfApi

        models = HfApi().list_models(search=query, pipeline_tag=task, sort="downloads", limit=limit, cardData=True)
        hits = []
        for m in models:
            card = getattr(m, "card_data", None) or getattr(m, "cardData", None) or {}
            license_ = card.get("license") if isinstance(card, dict) else getattr(card, "license", None)
            hits.append(
                HubHit(
                    m.id,
                    getattr(m, "downloads", None),
                    getattr(m, "likes", None),
                    getattr(m, "pipeline_tag", None),
                    license_,
                )
            )
        return HubSearch(query, hits)
    except Exception as exc:  # network errors come in many types (requests, httpx, OSError)
        return HubSearch(
            query,
            note=f"hub search unavailable (offline?): {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else ''}",
        )


def packaged_card(name: str) -> dict:
    """The model card shipped inside a packaged model's PyPI package (see odyssey.models.packaged_card)."""
    from odyssey.models import packaged_card as card

    return card(name)


def model_cards(project=None, include_tiny: bool = False) -> list:
    """``odyssey.models.catalog`` with packaged models' cards filled in from their packages."""
    from odyssey.models import catalog

    infos = catalog(project, include_tiny=include_tiny)
    for info in infos:
        if info.ref.startswith("packaged:") and not info.card:
            card = packaged_card(info.ref.split(":", 1)[1])
            if card:
                info.card = card
                info.license = card.get("license", info.license)
    return infos
