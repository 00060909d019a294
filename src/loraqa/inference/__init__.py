"""Answering: generation on a model < the Answerer (one base, many adapters) < predict, merge; batching for the server."""
