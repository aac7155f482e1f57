"""The models of a job: a converted folder or Hub id inspected and its variant resolved (before any data is
read, since the variant says how to read it), then the models built for the pass (converted, original, stock).
"""
