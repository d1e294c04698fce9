"""What the geosscl algorithms share: their group, and the parameters of the labels (polygons or a class raster)."""

from __future__ import annotations

from dataclasses import dataclass

from qgis.core import (
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingException,
    QgsProcessingParameterBoolean,
    QgsProcessingParameterField,
    QgsProcessingParameterRasterLayer,
    QgsProcessingParameterString,
    QgsProcessingParameterVectorLayer,
)

from .layers import check_label_raster, check_vector


@dataclass
class LabelLayers:
    """The labels an algorithm was given: a polygon layer with its class field, or a class raster."""

    layer: object  #: QgsVectorLayer of polygons, or QgsRasterLayer of class ids
    #: the polygons' class field ("": the one the model's labels came from; None for a raster)
    class_field: str | None
    #: class of the pixels outside every polygon; None: the model's where it has one; "": none, not even the model's
    background: str | None
    area: object | None  #: QgsVectorLayer of the polygons where the labels are complete

    @property
    def is_raster(self) -> bool:
        return self.class_field is None


class GeossclAlgorithm(QgsProcessingAlgorithm):
    LABELS = "LABELS"
    CLASS_FIELD = "CLASS_FIELD"
    LABEL_RASTER = "LABEL_RASTER"
    BACKGROUND_CLASS = "BACKGROUND_CLASS"
    NO_BACKGROUND = "NO_BACKGROUND"
    LABEL_AREA = "LABEL_AREA"

    def group(self):
        return "Segmentation"

    def groupId(self):  # noqa: N802
        return "segmentation"

    def createInstance(self):  # noqa: N802
        return type(self)()

    def add_label_parameters(self, title, unlabelled):
        """LABELS (polygons) and CLASS_FIELD, or LABEL_RASTER; BACKGROUND_CLASS, NO_BACKGROUND and LABEL_AREA:
        geosscl's --labels, --class-column, --label-nodata (the raster's additional no-data value),
        --background-class, --no-background-class and --label-area. ``unlabelled`` says what becomes of the pixels outside the polygons without a background class."""
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.LABELS, f"{title}: polygons", [QgsProcessing.TypeVectorPolygon], optional=True))
        self.addParameter(QgsProcessingParameterField(
            self.CLASS_FIELD, "Class field of the polygons (names or ids; empty, with a model: the field its "
            "labels came from)", parentLayerParameterName=self.LABELS, optional=True))
        self.addParameter(QgsProcessingParameterRasterLayer(
            self.LABEL_RASTER, f"{title}: or a class raster (one band of class ids; no-data pixels are {unlabelled})",
            optional=True))
        self.addParameter(QgsProcessingParameterString(
            self.BACKGROUND_CLASS, "Background class: the class of every pixel outside the polygons (footprint "
            f"layers such as buildings; empty: the model's background class where it has one, else those pixels are "
            f"{unlabelled})", optional=True))
        self.addParameter(QgsProcessingParameterBoolean(
            self.NO_BACKGROUND, f"No background class: the pixels outside the polygons are {unlabelled}, even where "
            "the model has a background class (sparse polygons of every class)", defaultValue=False, optional=True))
        self.addParameter(QgsProcessingParameterVectorLayer(
            self.LABEL_AREA, "Area where the labels are complete (empty: the whole raster)",
            [QgsProcessing.TypeVectorPolygon], optional=True))

    def label_parameters(self, parameters, context, optional=False, model=False) -> LabelLayers | None:
        """The labels given, checked: polygons and their class field, or a class raster, not both. With
        ``optional``, None where neither is given (a background class or label area alone is refused). With
        ``model`` (a geosscl model is given), polygons without a class field are read by the field the model's
        labels came from: geosscl reads which it is from the model, and says so in the log, or that it has none."""
        polygons = self.parameterAsVectorLayer(parameters, self.LABELS, context)
        raster = self.parameterAsRasterLayer(parameters, self.LABEL_RASTER, context)
        fields = self.parameterAsFields(parameters, self.CLASS_FIELD, context)
        background = self.parameterAsString(parameters, self.BACKGROUND_CLASS, context) or None
        if self.parameterAsBool(parameters, self.NO_BACKGROUND, context):
            if background:
                raise QgsProcessingException(f"Background class: {background!r} given, and no background class "
                                             "asked for; give one of them")
            background = ""
        area = self.parameterAsVectorLayer(parameters, self.LABEL_AREA, context)
        if optional and polygons is None and raster is None:
            if background is not None or area is not None:
                raise QgsProcessingException("Labels: a background class or label area describes the labels you have; "
                                             "give their polygons or class raster too")
            return None
        if area is not None:
            check_vector(area, "Label area")
        if polygons is not None and raster is not None:
            raise QgsProcessingException(
                f"Labels: give polygons or a class raster, not both ({polygons.name()}, {raster.name()})")
        if raster is not None:
            check_label_raster(raster)
            if background:
                raise QgsProcessingException(
                    f"Background class: for polygon labels; the class raster {raster.name()} holds its background "
                    "class itself")
            return LabelLayers(raster, None, None, area)
        if polygons is None:
            raise QgsProcessingException("Labels: give a polygon layer (and its class field) or a class raster")
        check_vector(polygons, "Labelled polygons")
        if not fields and not model:
            raise QgsProcessingException("Class field: choose the field of the polygons that holds their class")
        return LabelLayers(polygons, fields[0] if fields else "", background, area)
