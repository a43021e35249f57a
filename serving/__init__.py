"""The serving side of fraud-bento: model runtime, request codecs, batching, protocols.

Nothing here imports training/: the model carries its feature schema and threshold.
"""
