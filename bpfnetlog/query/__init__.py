"""The Lucene-like query language, compiled to parameterized SQL."""
