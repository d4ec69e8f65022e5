"""The LLM layer of stage 1 and of the judge: base (settings, request/reply, errors, decoding
boundary), client (transport, cache, budget, retries), providers (an OpenAI-compatible
endpoint, recorded answers) and answers (JSON extraction, repair re-asks, yield, concurrency).
Imports only agfsync.core; no torch.
"""
