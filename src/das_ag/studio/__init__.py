"""The studio's parts that need no Streamlit: form <-> config, background jobs, where files go.

`das_ag/app.py` (the Streamlit page, the entry users run) lays these out.
"""
