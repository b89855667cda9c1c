"""The admin UI: server-rendered pages over the facade, with a little JavaScript for live parts."""
