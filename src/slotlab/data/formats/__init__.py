"""Readers and writers of published dataset formats."""
