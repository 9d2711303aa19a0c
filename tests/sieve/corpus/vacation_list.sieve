require ["vacation", "vacation-seconds"];
vacation :seconds 3600 :handle "away" "gone";
