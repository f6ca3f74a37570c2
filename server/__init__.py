"""hotswap server: HTTP app, settings, OpenAI protocol and the engine boundary."""
