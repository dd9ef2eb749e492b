"""Publishing a stage checkpoint: its model card (card.py, from evidence.py and lineage.py)
and the upload of one of its forms to the Hugging Face Hub (upload.py)."""

from medrl.publishing.card import CARD_DIR, CARD_FILE, DISCLAIMER, gather, render_card, write_card
from medrl.publishing.settings import CardSettings, PublishSettings
from medrl.publishing.upload import PlannedFile, PublishError, plan_table, upload_plan

__all__ = [
    "CARD_DIR",
    "CARD_FILE",
    "DISCLAIMER",
    "CardSettings",
    "PlannedFile",
    "PublishError",
    "PublishSettings",
    "gather",
    "plan_table",
    "render_card",
    "upload_plan",
    "write_card",
]
