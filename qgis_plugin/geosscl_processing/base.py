"""What the geosscl algorithms share: their group, and the parameters of a labelled polygon layer."""

from __future__ import annotations

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterField,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
)

from .layers import check_vector


class GeossclAlgorithm(QgsProcessingAlgorithm):
    LABELS = "LABELS"
    CLASS_FIELD = "CLASS_FIELD"
    BACKGROUND_CLASS = "BACKGROUND_CLASS"
    LABEL_AREA = "LABEL_AREA"

    def group(self):
        return "Segmentation"

    def groupId(self):  # noqa: N802
        return "segmentation"

    def createInstance(self):  # noqa: N802
        return type(self)()

    def add_label_parameters(self, title, unlabelled):
        """LABELS (polygons) and CLASS_FIELD, BACKGROUND_CLASS and LABEL_AREA, as geosscl's --labels,
        --class-column, --background-class and --label-area; ``unlabelled`` says what becomes of the pixels
        outside the polygons without a background class."""
        self.addParameter(QgsProcessingParameterVectorLayer(self.LABELS, title, [QgsProcessing.TypeVectorPolygon]))
        self.addParameter(QgsProcessingParameterField(
            self.CLASS_FIELD, "Class field (names or ids)", parentLayerParameterName=self.LABELS))
        self.addParameter(QgsProcessingParameterString(
            self.BACKGROUND_CLASS, "Background class: the class of every pixel outside the polygons (footprint "
            f"layers such as buildings; empty: those pixels are {unlabelled})", optional=True))
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.LABEL_AREA, "Area where the labels are complete (with a background class; empty: the whole raster)",
            [QgsProcessing.TypeVectorPolygon], optional=True))

    def label_parameters(self, parameters, context):
        """``(labels layer, class field, background class or None, label area layer or None)``, checked."""
        labels = self.parameterAsVectorLayer(parameters, self.LABELS, context)
        check_vector(labels, "Labelled polygons")
        fields = self.parameterAsFields(parameters, self.CLASS_FIELD, context)
        if not fields:
            raise QgsProcessingException("Class field: choose the field of the polygons that holds their class")
        area = self.parameterAsVectorLayer(parameters, self.LABEL_AREA, context)
        if area is not None:
            check_vector(area, "Label area")
        background = self.parameterAsString(parameters, self.BACKGROUND_CLASS, context) or None
        return labels, fields[0], background, area
