"""The "geosscl" Processing provider and its setting: where the geosscl executable is."""

from qgis.core import QgsProcessingProvider

from .algorithm import SegmentRasterAlgorithm
from .evaluation import EvaluateModelAlgorithm
from .pretraining import PretrainAlgorithm
from .runner import EXECUTABLE_SETTING
from .suggestion import SuggestTilesAlgorithm
from .training import TrainModelAlgorithm


class GeossclProvider(QgsProcessingProvider):
    def id(self):
        return "geosscl"

    def name(self):
        return "geosscl"

    def longName(self):  # noqa: N802
        return "geosscl (self-supervised segmentation)"

    def load(self):
        try:  # the Processing plugin's settings dialog; absent in some headless set-ups
            from processing.core.ProcessingConfig import ProcessingConfig, Setting

            ProcessingConfig.settingIcons[self.name()] = self.icon()
            ProcessingConfig.addSetting(Setting(
                self.name(), EXECUTABLE_SETTING, "geosscl executable (empty: GEOSSCL_EXECUTABLE, then PATH)", "",
                valuetype=Setting.FILE,
            ))
            ProcessingConfig.readSettings()
        except ImportError:
            pass
        self.refreshAlgorithms()
        return True

    def unload(self):
        try:
            from processing.core.ProcessingConfig import ProcessingConfig

            ProcessingConfig.removeSetting(EXECUTABLE_SETTING)
        except (ImportError, KeyError):
            pass

    # geosscl writes Cloud-Optimised GeoTIFFs and GeoPackages alone: offering other formats in the
    # dialogs would only lead to its refusal of the name after the user chose it.
    def supportedOutputRasterLayerExtensions(self):  # noqa: N802
        return ["tif"]

    def supportedOutputVectorLayerExtensions(self):  # noqa: N802
        return ["gpkg"]

    def loadAlgorithms(self):  # noqa: N802
        self.addAlgorithm(PretrainAlgorithm())
        self.addAlgorithm(SegmentRasterAlgorithm())
        self.addAlgorithm(TrainModelAlgorithm())
        self.addAlgorithm(EvaluateModelAlgorithm())
        self.addAlgorithm(SuggestTilesAlgorithm())
