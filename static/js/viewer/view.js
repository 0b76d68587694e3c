// Where the image sits on screen: scale (screen px per data pixel) and the screen position of its top-left corner.
// Data coordinates: x = column, y = row, continuous, y increasing UPWARD (FITS row 0 at the bottom).

const MAX_PIXEL_SIZE = 96;  // screen px per data pixel at the deepest zoom

export class View {
  constructor() {
    this.width = 1;       // image extent in data pixels
    this.height = 1;
    this.screenWidth = 1; // stage size in CSS px
    this.screenHeight = 1;
    this.scale = 1;
    this.left = 0;
    this.top = 0;
    this.fitted = true;   // still at "reset": refit when the stage is resized
  }

  get fitScale() {
    return Math.min(this.screenWidth / this.width, this.screenHeight / this.height);
  }

  setExtent(width, height) {
    this.width = width;
    this.height = height;
    this.reset();
  }

  setScreen(width, height) {
    const centre = this.toData(this.screenWidth / 2, this.screenHeight / 2);
    this.screenWidth = Math.max(1, width);
    this.screenHeight = Math.max(1, height);
    if (this.fitted) return this.reset();
    this.centreOn(centre.x, centre.y);
  }

  reset() {
    this.scale = this.fitScale;
    this.left = (this.screenWidth - this.width * this.scale) / 2;
    this.top = (this.screenHeight - this.height * this.scale) / 2;
    this.fitted = true;
  }

  centreOn(x, y) {
    this.left = this.screenWidth / 2 - x * this.scale;
    this.top = this.screenHeight / 2 - (this.height - y) * this.scale;
  }

  toScreen(x, y) {
    return { x: this.left + x * this.scale, y: this.top + (this.height - y) * this.scale };
  }

  toData(sx, sy) {
    return { x: (sx - this.left) / this.scale, y: this.height - (sy - this.top) / this.scale };
  }

  /** Zoom by `factor`, keeping the data point under the screen point (sx, sy) where it is. */
  zoomAt(factor, sx, sy) {
    const lowest = this.fitScale / 2;
    const scale = Math.min(MAX_PIXEL_SIZE, Math.max(lowest, this.scale * factor));
    this.left = sx - ((sx - this.left) * scale) / this.scale;
    this.top = sy - ((sy - this.top) * scale) / this.scale;
    this.scale = scale;
    this.fitted = false;
    this.keepInSight();
  }

  panBy(dx, dy) {
    this.left += dx;
    this.top += dy;
    this.fitted = false;
    this.keepInSight();
  }

  /** At least a quarter of the stage keeps showing the image, so it can never be lost off screen. */
  keepInSight() {
    const marginX = this.screenWidth / 4, marginY = this.screenHeight / 4;
    const w = this.width * this.scale, h = this.height * this.scale;
    this.left = Math.min(this.screenWidth - marginX, Math.max(marginX - w, this.left));
    this.top = Math.min(this.screenHeight - marginY, Math.max(marginY - h, this.top));
  }
}
