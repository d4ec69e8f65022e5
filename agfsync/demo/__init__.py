"""Demo-only code, never imported by the pipeline's other wings: tiny random models of every
family (rule models_tiny) and toy helpers shared by the tests and benchmarks.
"""
