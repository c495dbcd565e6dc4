"""``python -m mmsearch_service``: run the service of ``MMSEARCH_DATA_DIR`` in the
foreground (``--detached``: log to the file only; fronts start it that way)."""

from mmsearch_service.service import main

if __name__ == "__main__":
    main()
