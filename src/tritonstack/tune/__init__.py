"""``tritonstack tune``: search the serving config of a text-in model that holds an SLO at the highest
throughput on this machine, and write it into the repository.

``knobs`` reads and writes the searched settings of the tokenizer and encoder
configs; ``space`` lists the values each may take; ``score`` judges a
concurrency sweep against the SLO; ``search`` climbs from the export's defaults;
``session`` measures one config on a running Triton; ``runner`` ties them to
a budget; ``report`` and ``apply`` write the result.
"""
