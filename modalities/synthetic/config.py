"""Options of the synthetic driving-data generator (one pydantic model, validated early)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from modalities.lidar.sensors import LidarSensor, load_sensor


class SynthConfig(BaseModel):
    """What to generate. Same config + same seed -> byte-identical files."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0)  # change for a different, equally valid world
    scenes: int = Field(2, ge=1, le=10_000)  # one scene = one log, one map, one road
    samples_per_scene: int = Field(4, ge=1, le=400)  # key frames per scene, 2 Hz as nuScenes
    sweeps_per_sample: int = Field(1, ge=0, le=20)  # non-key lidar sweeps before each key frame (nuScenes: ~9)
    lidar_sensor: str = "hdl32e"  # preset name (vlp16, hdl32e, hdl64e, os1_64) or a sensor YAML path
    lidar_random_dropout: float = Field(0.0, ge=0.0, lt=1.0)  # extra fraction of returns lost at random
    image_width: int = Field(1600, ge=32, le=8192)  # nuScenes: 1600x900; demo/tests use 640x360 or less
    image_height: int = Field(900, ge=32, le=8192)
    camera_hfov_deg: float = Field(70.0, gt=10.0, lt=170.0)  # the five narrow cameras
    back_camera_hfov_deg: float = Field(110.0, gt=10.0, lt=170.0)  # CAM_BACK is wider, as in nuScenes
    jpeg_quality: int = Field(92, ge=50, le=100)  # fixed so that files are reproducible
    shadows: bool = True  # sun shadows in camera images (one occlusion ray per pixel)
    ego_speed_mps: tuple[float, float] = (4.0, 10.0)  # ego speed drawn per scene from this range
    cars_per_100m: float = Field(8.0, ge=0.0, le=60.0)  # parked/stopped cars, both sides
    pedestrians_per_100m: float = Field(6.0, ge=0.0, le=60.0)
    trees_per_100m: float = Field(8.0, ge=0.0, le=60.0)
    version: str = "v1.0-synthetic"  # the table folder name, as v1.0-mini / v1.0-trainval
    # Also write bev_labels/<sample token>.png (modalities.bev_labels format, default grid).
    # Off by default; left out of the resolved options while off, so existing sets keep their bytes.
    bev_labels: bool = Field(False, exclude_if=lambda v: not v)

    @field_validator("version")
    @classmethod
    def _version_is_a_folder_name(cls, v: str) -> str:
        if not v or "/" in v or "\\" in v or v.startswith("."):
            raise ValueError(f"version must be a plain folder name such as 'v1.0-synthetic', got {v!r}")
        return v

    @field_validator("lidar_sensor")
    @classmethod
    def _sensor_loads(cls, v: str) -> str:
        try:
            load_sensor(v)
        except (ValueError, FileNotFoundError) as e:
            raise ValueError(str(e)) from e
        return v

    @field_validator("ego_speed_mps")
    @classmethod
    def _speed_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not 0.0 <= lo <= hi <= 30.0:
            raise ValueError(f"ego_speed_mps must be (min, max) with 0 <= min <= max <= 30, got {v}")
        return v

    @model_validator(mode="after")
    def _aspect(self) -> "SynthConfig":
        if not 0.25 <= self.image_width / self.image_height <= 4.0:
            raise ValueError(
                f"image_width/image_height = {self.image_width}/{self.image_height} is an odd aspect ratio;"
                " keep it between 1:4 and 4:1"
            )
        return self

    def sensor(self) -> LidarSensor:
        return load_sensor(self.lidar_sensor)

    def resolved(self) -> dict:
        """JSON-ready dict of the options, with the lidar model spelled out."""
        d = self.model_dump(mode="json")
        d["lidar_sensor_model"] = self.sensor().to_dict()
        if Path(self.lidar_sensor).suffix:
            d["lidar_sensor"] = str(self.lidar_sensor)
        return d
