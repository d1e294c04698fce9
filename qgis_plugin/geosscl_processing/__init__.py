"""geosscl for QGIS: a Processing provider that runs ``geosscl predict``."""


def classFactory(iface):  # noqa: N802 (QGIS's name)
    """QGIS entry point; ``iface`` is None in headless runs (qgis_process), so nothing here touches the GUI."""
    from .plugin import GeossclPlugin

    return GeossclPlugin(iface)
