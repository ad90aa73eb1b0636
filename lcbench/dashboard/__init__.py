"""The Streamlit dashboard: results of runs and the user-study views (served by ``bench dashboard``)."""
