"""Every OpenAI endpoint's router, in the order the OpenAPI docs list them."""

from __future__ import annotations

from fastapi import APIRouter

from .chat.router import router as chat
from .completions.router import router as completions
from .models.router import router as models
from .responses.router import router as responses
from .tokenize.router import router as tokenize

ROUTERS: tuple[APIRouter, ...] = (models, completions, chat, responses, tokenize)
